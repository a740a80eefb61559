"""What wraps every request: authentication, CORS, request limits and logging, health, the OpenAPI document."""
