"""The training loop: the gin root (`Trainer`), the builder of a run, the controller and its actions, the compiled programs."""
