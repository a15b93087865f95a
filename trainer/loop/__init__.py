"""The training loop: the gin root (`Trainer`), run builder, controller and its actions, compiled programs."""
