"""mf-example-toy: a minimal third-party plugin for mfcore."""
