package Bench::CallFloor;

# Floors for bench/dispatch.pl: see CallFloor.xs.  Built on its own, never
# installed:  cd bench/callfloor && perl Makefile.PL && make

use strict;
use warnings;

our $VERSION = '0.01';

require XSLoader;
XSLoader::load('Bench::CallFloor', $VERSION);

sub new { return bless {}, shift }

1;
