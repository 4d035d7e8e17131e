"""Each kind of job: how its models load and how it runs (chat, speech, images, embeddings), and the
registry the engine looks them up in."""
