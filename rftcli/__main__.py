from rftcli.cli import app

app()
