use strict;
use warnings;

# The event-loop conformance suite (t/lib/LoopConformance.pm) against
# Sys::Virt::Event::AnyEvent on AnyEvent's pure-Perl backend
# (PERL_ANYEVENT_MODEL=Perl).

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use LoopConformance;

LoopConformance::run('anyevent-perl');
done_testing;
