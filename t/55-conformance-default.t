use strict;
use warnings;

# The event-loop conformance suite (t/lib/LoopConformance.pm) against
# libvirt's default event loop (register_default, run_default); it
# cannot list its watches and timers, so the cases assert through
# other evidence, and running it in a forked child croaks by design.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use LoopConformance;

LoopConformance::run('default');
done_testing;
