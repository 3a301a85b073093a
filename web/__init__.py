"""aiohttp REST API and the console."""
