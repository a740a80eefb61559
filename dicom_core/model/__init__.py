"""The DICOM model every feature shares: identifiers, UIDs, levels, tags, DICOM JSON, Part 10 files, errors."""
