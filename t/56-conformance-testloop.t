use strict;
use warnings;

# The event-loop conformance suite (t/lib/LoopConformance.pm) against
# t/lib/TestLoop.pm, a poll() loop written as upstream Sys::Virt's
# are: it frees inside remove_*.

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use LoopConformance;

LoopConformance::run('testloop');
done_testing;
