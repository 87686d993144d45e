"""The vlreward Ray Serve application: HTTP ingress, model replicas, Python client. No reward math here."""
