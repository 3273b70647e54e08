"""Dataset readers, one per dataset, from the layouts their owners distribute."""
