"""SCOMO on the device: software component download, delivery and installation."""
