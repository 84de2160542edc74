use strict;
use warnings;

use FindBin;
use Test::More;
use ExtUtils::Manifest ();

# MANIFEST lists every file of the distribution and nothing that is gone:
# a CPAN tarball built from it lacks nothing the repository has.
chdir "$FindBin::Bin/.." or die "chdir: $!";
local $ExtUtils::Manifest::Quiet = 1;
my @missing = ExtUtils::Manifest::manicheck();
is_deeply(\@missing, [], 'every file in MANIFEST exists');
my @extra = ExtUtils::Manifest::filecheck();
is_deeply(\@extra, [], 'every file of the tree is in MANIFEST (or MANIFEST.SKIP)');
done_testing;
