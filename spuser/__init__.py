"""Spread's command-line clients, over spreadpy.client.

  spuser     interactive test client (spuser.cli), Spread 5.0.1's examples/user.c to the byte
  spflooder  throughput flooder (spuser.flooder), Spread 5.0.1's examples/flooder.c
  spping     round-trip latency through the ring between two clients (spuser.ping)

spuser.pipe drives a spuser process through pipes (scripts/demo.py and the tests use it).
"""
