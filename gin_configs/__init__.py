"""The shipped gin configs; a package so that they install with Occam and resolve from any directory."""
