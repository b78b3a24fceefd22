"""The DM management tree: URIs, ACLs, TNDS, nodes, properties and persistence."""
