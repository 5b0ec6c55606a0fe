"""Where questions come from: the real benchmark on the hub, an offline generator, or a user's file."""
