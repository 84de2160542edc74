use strict;
use warnings;

# The event-loop conformance suite (t/lib/LoopConformance.pm) against
# Sys::Virt::Event::AnyEvent over EV through its Perl path
# (register(native => 0)).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use LoopConformance;

LoopConformance::run('anyevent-ev');
done_testing;
