"""Load generators for the demo and the benches, outside the detector core.

* ``runbook`` - the backpressure runbook's workload (queues, permits, latency
  histograms) with scripted incidents and benign days.
* ``serve`` - plays a simulator to Headroom over remote-write, or serves it as a
  ``/metrics`` page for Prometheus to scrape.
"""
