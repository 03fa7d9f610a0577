"""Google Cloud: Vertex AI job specs and submission, the multi-node cluster environment, Secret Manager."""
