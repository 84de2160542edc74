use strict;
use warnings;

# t/75-anyevent.t again, on AnyEvent's pure-Perl backend
# (AnyEvent::Impl::Perl) instead of EV.

use FindBin;

our $MODEL = 'Perl';
do "$FindBin::Bin/75-anyevent.t" or die $@ || "t/75-anyevent.t: $!";
