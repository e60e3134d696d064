"""hacluster operator: the HACluster resource, its decisions and its kopf handlers."""
