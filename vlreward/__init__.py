"""The `vlreward` command line over rewards/, serve/, rl/ and envs/."""
