// Swagger UI over this server's OpenAPI document (the bundle is served from the installed package).
const root = document.getElementById("ui");
window.ui = SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#ui", deepLinking: true });
