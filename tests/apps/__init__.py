"""Tiny ASGI apps that tests start in a real uvicorn process (tests/servers.py: uvicorn_server)."""
