"""The file tree shared by behaviours that serve files: confinement, store, hashing, uploads."""
