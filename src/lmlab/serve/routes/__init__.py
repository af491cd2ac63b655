"""The server's endpoints, one module per family: chat, completions, models, health and page."""
