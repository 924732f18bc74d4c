from maskwright.cli import app

app()
