// Swagger UI over this server's OpenAPI document (the bundle is served from the installed package).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui", deepLinking: true });
