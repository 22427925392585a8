"""The sans-I/O protocol core (L1): envelopes, codec, advertisements. No sockets, no clock."""
