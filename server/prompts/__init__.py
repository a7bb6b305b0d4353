"""Runtime forms of prompt artifacts: what lives on the device for each task version."""
