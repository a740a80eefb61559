"""Series metadata documents (one blob of every instance's metadata per series) and their cache."""
