"""Templates of the verifier's judging prompt, kept as data files (``string.Template`` syntax, ``$name``)."""
