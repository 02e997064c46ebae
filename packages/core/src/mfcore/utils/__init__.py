"""Small shared utilities, below everything else: atomic writes (`atomic`), lazy package exports
(`lazy`), mfcore's home folder (`paths`) and MindSpore's one-time device setup (`runtime`)."""
