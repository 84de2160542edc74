use strict;
use warnings;

use FindBin;
use Test::More;

use Sys::Virt::Event ();

# Changes is in CPAN::Changes form: "VERSION DATE", then indented entries;
# its newest release is the module's version.
my $file = "$FindBin::Bin/../Changes";
open my $fh, '<', $file or plan skip_all => "no Changes file: $!";
my @lines = <$fh>;
close $fh;

my @releases = grep { /^\S/ && !/^Revision history/ } @lines;
ok(@releases, 'Changes lists releases');
like($_, qr/^\d+\.\d+(?:_\d+)?\s+(?:\d{4}-\d{2}-\d{2}|Unreleased)\s*$/,
     "release line: $_") for @releases;
my ($newest) = $releases[0] =~ /^(\S+)/;
is($newest, $Sys::Virt::Event::VERSION, 'the newest entry is the module version');
ok(!grep({ /^\t/ } @lines), 'no tabs');
done_testing;
