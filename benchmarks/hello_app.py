"""The baseline: a bare Flask hello, served like the gateway (``gunicorn -w 2``, sync)."""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return "Hello, World!"
