"""The ray engine: one Ray actor (one process) per PE, a router actor per chip and a host actor.

Each actor is a thin shell around the same plain object the local engine steps. A tick's packets from one
actor travel as one msgpack message (router/packets.py). The router actor is the chip's clock: it hands
every PE and the host its inbound batch for tick t, collects what they sent, routes it, and delivers it at
tick t+1. Packets thus take one hop through the router per tick, never a detour through the driver, which
only asks the router to advance CHUNK ticks at a time and updates the progress bar.

Two transports carry the per-tick exchange between the router and the endpoints:

* ``channels`` (default): Ray places, starts and supervises the actors, but the ticks travel over direct
  ``multiprocessing.connection`` channels. The router actor listens on a TCP port (loopback when the whole
  cluster is this machine, else its node's IP) with a random authkey, so nothing else can inject packets;
  each endpoint process (one PE, K PEs with --pes-per-process K, or the host) runs ``serve``, one long actor
  call that connects one channel, then per tick receives (tick, its endpoints' inbound bytes), steps them in
  turn and sends back their outbound bytes, until the router says stop. An endpoint whose object raises
  sends the exception over the channel, and the router raises it; a process that dies closes its socket,
  and the router raises S2EmuError at once.
* ``calls``: one Ray actor call per endpoint per tick (~1 ms each): simpler, slower; the measured baseline.

A machine of many chips runs one router actor per chip (every chip a packet may reach), each the clock of
its own endpoints. Neighbouring routers are joined by a channel per link (the higher-numbered chip connects
to the lower one's listener) and do router/mesh.py's hop rounds over them every tick (links.py). Only the
channels transport runs many chips.

The rooms, one job each:

* ``protocol.py``: the channel messages and their framing (what travels between router and endpoints).
* ``endpoint.py``: the actor shell of an endpoint process (PEs or the host): ``serve`` steps them per tick.
* ``router_actor.py``: the actor shell of a chip's router: the clock, the channels, checkpoint snapshots.
* ``door.py``: the router's listening socket: authenticates each channel, drops strangers within seconds.
* ``links.py``: the hop exchange between neighbouring routers (LinkExchange).
* ``cluster.py``: joining a Ray cluster or starting a private one; placement of chips on nodes.
* ``waits.py``: bounded waits on actor calls (a silent actor is a hang, not a wait).
* ``raylet.py``: the driver's watch on its node's raylet (dead or stopped: the run ends, naming its checkpoint).
* ``run.py``: the driver: start the actors, advance the ticks, checkpoint, collect; the restart loop.
"""

from .cluster import start_ray
from .run import run_ray

__all__ = ["run_ray", "start_ray"]
