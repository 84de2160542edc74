use strict;
use warnings;

# The event-loop conformance suite (t/lib/LoopConformance.pm) against
# Sys::Virt::Event::EV, the native loop on libev, run with EV::run
# (skips, saying why, where it is not built).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use LoopConformance;

LoopConformance::run('ev-native');
done_testing;
