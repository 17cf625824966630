"""Two-stage evaluation of rules that combine series across scrape targets (issue 13).

Series are partitioned by series family (:data:`detector.labels.BY_SERIES_FAMILY`,
the worker's default with staged rules: a big scrape target spreads over every
partition) or by scrape target, so a rule such as ``sum by
(namespace) (rate(container_cpu_usage_seconds_total[5m])) > 4`` needs series
that live in every partition. By family, ``sum by (job, instance) (...)`` does
too; only elementwise rules, one-to-one matching and a histogram's buckets
stay *local* (:func:`detector.labels.colocated_by` says what the partitioning
keeps together; the plan follows it). Instead of sending all of them to one global
lane, the work is split in two stages, as Kafka Streams (repartition topics)
and Flink (keyed two-phase aggregation) do:

**Stage 1** (every samples partition, :class:`~detector.stages.stage1.Stage1Partition`).
At each tick a partition evaluates its local rules as today and, for each
staged rule, the *inner* expression over its own series: the aggregation's
partial keyed by the aggregation's output labels (``sum``, ``count``,
``min``, ``max``, ``group``; ``avg`` as mean and count; ``stddev``/``stdvar``
as count, mean and squared deviations; ``count_values`` as counts; ``topk``/
``bottomk`` as its own top k per group; ``quantile``, which has no exact
bounded partial, falls back to its input samples), or, for a join across
targets (``on(q) group_left``), the two sides' samples. See
:mod:`detector.stages.split` and :mod:`detector.stages.partials`.

**Repartition.** Each partial row goes to combine partition ``hash(route key)
mod M`` (:class:`~detector.stages.split.Route`): the aggregation's output labels,
the join's matching labels (both sides to the same partition), or the
coarsest key every combining node left in the rule allows. So the combine
stage has many partitions and is parallel too. Rows travel in versioned
binary frames (:mod:`detector.stages.frames`) that also carry the sender's
watermark and any stage-1 evaluation failure.

**Stage 2** (:class:`~detector.stages.combine.CombinePartition`). Merges the
partials of a tick and evaluates the rest of the rule (comparisons, ``for``,
``keep_firing_for``, alerts, recording rules) with the ordinary rule engine,
exactly as today: the remainder reads the merged partials through
:class:`~detector.stages.inputs.StagedInput` leaves. Rules reading series that
staged recording rules wrote run there too, over the share each combine
partition holds.

**A second combine level** serves an aggregation over a cross-target join
that copies labels (``sum by (node) (cpu * on(namespace, pod)
group_left(node) kube_pod_info)``): routed by the join's labels, the first
level evaluates the join and the partial sums by node, and sends them, in
frames again, to the second level, routed by node
(:func:`~detector.stages.split.deepen`). It gates on the first level's
watermarks as the first level gates on stage 1's.

**Only what must be global stays in one place.** ``absent()``, ``vector()``
and aggregations without ``by`` go to one combine partition, but receive
counts and partials, not raw series; the few partial rows of a ``scalar()``
are broadcast to every combine partition, so ``x > scalar(max(y))`` keeps x
spread. What the stages cannot separate
(see :mod:`detector.stages.plan`) stays *still-global*: one engine over the
raw series its selectors match, as the global lane today.

**Event time.** Every partition of both stages evaluates the same tick
schedule (multiples of each group's interval from one origin). A frame
carries its sender's watermark: the sender has evaluated, and sent the
partials of, every tick up to it. A combine partition evaluates tick t once
every upstream partition's watermark has passed t, so its result is that of
one engine over all the data; partials for a tick already evaluated are
counted as late and dropped, like late samples. Frames (version 2) also carry:

* the sender's *origin*, the first tick it evaluated: a combine partition's
  schedule starts at the earliest origin of its upstreams, with or without
  rows for it there (``absent()`` fires from the first tick, as in one engine);
* the ticks the sender *skipped* (more than ``HEADROOM_MAX_CATCH_UP`` behind its
  watermark after a jump): the combine partition skips them too
  (:meth:`~detector.rules.engine.RuleEngine.skip_ticks`) rather than evaluate
  them with that sender's partials missing.

A combine partition runs at most ``max_evaluations_per_step`` group
evaluations per frame, like a samples engine; the rest in later steps
(:meth:`~detector.stages.combine.CombinePartition.step`).

*Silent upstreams.* The worker (:mod:`pipelines.stages`) lets an upstream
that sent no frame for ``HEADROOM_IDLE_ADVANCE`` plus the longest staged
interval (wall clock; a live upstream sends one each tick) stop holding a
combine partition back: its watermark follows the lowest of the upstreams
that sent frames after its last one
(:meth:`~detector.stages.combine.CombinePartition.presume`); its partials for
ticks evaluated meanwhile are dropped when they come (``presumed_rows``).
Bounded: pending partials never wait longer than that. It differs from one
engine in that the silent partition's series count as absent at those ticks
(one engine would still read them through the lookback); a live quiet
partition never gets there, it advances on the wall clock and keeps sending.

**Recovery.** Stage-1 partitions are rule engines with snapshots as today;
partials a replay after a restore regenerates are recognised by the combine
partitions (their ticks are at or before that upstream's watermark) and
dropped. A combine partition's snapshot holds its engine, the upstream
watermarks and the partials of ticks not evaluated yet.

:class:`~detector.stages.engine.StagedEngine` runs N stage-1 and M combine
partitions (and the still-global engine) in one process; it is the parity
oracle for the tests and the model for the Kafka wiring: every method it
calls takes batches or frame bytes and returns outputs and frame bytes.

**Known limits** (each exact, but not spread, or differing from one engine
only where noted):

* an aggregation over relabelled labels (``label_replace`` above a
  combining node), or over a join ``on()`` nothing, sends its raw inputs to
  one combine partition; a third level is not built;
* a rule combining series a staged recording rule writes at another
  interval, or with extra labels, stays in the global engine (same interval,
  evaluated before it: the recording's expression is read instead);
* an evaluation error in a combine partition (a join whose "one" side is
  not unique) fails that partition's share of the rule; one engine fails
  the whole rule. Two samples with the same labels after a recording rule's
  labels, in different combine partitions, are not detected;
* ``topk``/``bottomk`` break ties by partition order, Prometheus by series
  order; float sums, means and moments differ in the last bits (so does
  Prometheus between runs); a sum of only ``-0`` is ``0``;
* rules reading ``ALERTS`` see the alerts of their own partition only (as
  local rules do today).
"""
