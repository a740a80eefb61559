"""WADO-RS: retrieving instances, frames, metadata and rendered images, transcoded on request."""
