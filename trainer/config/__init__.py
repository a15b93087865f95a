"""Configuration: parsing gin files and bindings, the resume guard, the single registry of configurables."""
