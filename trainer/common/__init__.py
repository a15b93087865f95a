"""What every other part uses: argument checks and atomic file writes. Imports nothing from Occam."""
