"""Configuration: parsing gin files and bindings, the resume guard, and the one place that registers configurables."""
