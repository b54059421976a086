"""`--ray-*` flags of text-embeddings-router and what they become. No Ray import: the plain
server reads these flags too (they are all off by default)."""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class RayServeOptions:
    replicas: int = 1
    min_replicas: int | None = None  # with max_replicas: autoscaling, starting at `replicas`
    max_replicas: int | None = None
    target_ongoing_requests: float = 32.0
    # Serve's default (5 in flight per replica) starves a token-budget batcher; a replica takes this
    # many requests at once, and its own item limit (--max-concurrent-requests) answers TEI's 429.
    max_ongoing_requests: int = 128
    # Then each ingress replica queues at most this many, and answers the rest TEI's 429 with
    # Retry-After: never an unbounded queue.
    max_queued_requests: int = 64
    retry_after_s: float = 1.0
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    # The ingress only moves bytes (no engine, no torch), as Serve's own proxy does on 0 CPUs.
    ingress_replicas: int = 1
    ingress_cpus: float = 0.0

    def most_replicas(self) -> int:
        if self.min_replicas is None and self.max_replicas is None:
            return self.replicas
        return self.max_replicas if self.max_replicas is not None else max(self.replicas, 1)

    def deployment(self) -> dict:
        """Keyword arguments of serve.deployment() for the engine replicas."""
        options = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            # Read by the ingress (BackPressureError.retry_after_s) for its Retry-After header.
            "backpressure_config": self._backpressure(),
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
        }
        if self.min_replicas is not None or self.max_replicas is not None:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas if self.min_replicas is not None else 1,
                "initial_replicas": self.replicas,
                "max_replicas": self.most_replicas(),
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.replicas
        return options

    def ingress_deployment(self) -> dict:
        """Keyword arguments of serve.deployment() for the ingress. It must never be the bottleneck:
        whatever it holds is in flight on a replica, queued for one (bounded above), or being
        refused at once, so it takes twice what every replica together can hold. The proxy's queue
        for it is as large: the proxy counts a request as queued while it is being routed, so a
        burst fills a small queue (and gets Serve's plain-text 429) even when the ingress is idle.
        Only past both does Serve refuse with its own 429."""
        held = self.most_replicas() * self.max_ongoing_requests + self.max_queued_requests
        most = max(256, 2 * held)
        return {
            "num_replicas": self.ingress_replicas,
            "max_ongoing_requests": most,
            "max_queued_requests": most,
            "backpressure_config": self._backpressure(),
            "ray_actor_options": {"num_cpus": self.ingress_cpus},
        }

    def _backpressure(self):
        from ray.serve.config import BackpressureConfig

        return BackpressureConfig(status_code=429, retry_after_s=self.retry_after_s)


def add_flags(p) -> None:
    """p is the router's parser (its `add` also reads the RAY_* environment variables)."""
    p.add("--ray-replicas", type=int,
          help="Serve through Ray Serve with N replicas of the engine (Ray from RAY_ADDRESS, else a local one); "
          "needs pip install 'tei[ray]'")
    p.add("--ray-min-replicas", type=int, help="Ray Serve autoscaling: fewest replicas")
    p.add("--ray-max-replicas", type=int, help="Ray Serve autoscaling: most replicas")
    p.add("--ray-target-ongoing-requests", type=float, default=RayServeOptions.target_ongoing_requests,
          help="Ray Serve autoscaling target: requests in flight per replica")
    p.add("--ray-max-ongoing-requests", type=int, default=RayServeOptions.max_ongoing_requests,
          help="Requests in flight per replica; beyond that Serve queues")
    p.add("--ray-max-queued-requests", type=int, default=RayServeOptions.max_queued_requests,
          help="Requests queued per ingress replica when every replica is full; beyond that TEI's 429")
    p.add("--ray-ingress-replicas", type=int, default=RayServeOptions.ingress_replicas,
          help="Replicas of the ingress that forwards HTTP to the engine replicas (no engine, 0 CPUs)")
    p.add("--ray-cpus-per-replica", type=float, default=RayServeOptions.cpus_per_replica, help="CPUs per replica")
    p.add("--ray-gpus-per-replica", type=float, default=RayServeOptions.gpus_per_replica, help="GPUs per replica")


def from_args(args: argparse.Namespace) -> RayServeOptions | None:
    autoscaling = args.ray_min_replicas is not None or args.ray_max_replicas is not None
    if args.ray_replicas is None and not autoscaling:
        return None
    replicas = args.ray_replicas if args.ray_replicas is not None else (args.ray_min_replicas or 1)
    if replicas < 0 or (args.ray_replicas is not None and args.ray_replicas < 1 and not autoscaling):
        raise SystemExit("error: --ray-replicas must be at least 1")
    if args.ray_ingress_replicas < 1:
        raise SystemExit("error: --ray-ingress-replicas must be at least 1")
    return RayServeOptions(
        replicas=replicas,
        min_replicas=args.ray_min_replicas,
        max_replicas=args.ray_max_replicas,
        target_ongoing_requests=args.ray_target_ongoing_requests,
        max_ongoing_requests=args.ray_max_ongoing_requests,
        max_queued_requests=args.ray_max_queued_requests,
        ingress_replicas=args.ray_ingress_replicas,
        cpus_per_replica=args.ray_cpus_per_replica,
        gpus_per_replica=args.ray_gpus_per_replica,
    )
