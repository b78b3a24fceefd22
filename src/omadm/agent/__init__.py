"""The device agent: a standard OMA DM 1.2 client with a persistent DM tree."""
