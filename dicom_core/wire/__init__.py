"""The DICOMweb wire format: media types, multipart bodies, API versions (free of storage; the CLI uses it)."""
