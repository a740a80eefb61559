"""Local stand-in for the Azure Functions host: serves a FunctionApp's HTTP functions on uvicorn."""
