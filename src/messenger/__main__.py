from messenger.cli.main import app

app(prog_name="messenger")
