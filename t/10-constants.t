use strict;
use warnings;

use Test::More;

use Sys::Virt::Event ();

# The values are libvirt's virEventHandleType, fixed by its ABI.
my %expect = (
    HANDLE_READABLE => 1,
    HANDLE_WRITABLE => 2,
    HANDLE_ERROR    => 4,
    HANDLE_HANGUP   => 8,
);

for my $name (sort keys %expect) {
    no strict 'refs';
    is(&{"Sys::Virt::Event::$name"}(), $expect{$name}, "Sys::Virt::Event::$name");
}

is_deeply([sort @{$Sys::Virt::Event::EXPORT_TAGS{constants}}], [sort keys %expect],
          ':constants tag holds the four constants');
is_deeply(\@Sys::Virt::Event::EXPORT, [], 'nothing is exported by default');

{
    package ImportOne;
    Sys::Virt::Event->import('HANDLE_HANGUP');
    ::is(HANDLE_HANGUP(), 8, 'one constant imports by name');
    ::ok(!defined &ImportOne::HANDLE_READABLE, 'and only that one');
}
{
    package ImportTag;
    Sys::Virt::Event->import(':constants');
    ::is(HANDLE_READABLE() | HANDLE_WRITABLE() | HANDLE_ERROR() | HANDLE_HANGUP(), 15,
         ':constants imports all four');
}

ok(!eval { Sys::Virt::Event->import('add_handle'); 1 },
   'functions are not exportable');

# Fully qualified, as code written for Sys::Virt 9.0.0 uses them: they
# are constants, folded at compile time.
my $mask = Sys::Virt::Event::HANDLE_READABLE | Sys::Virt::Event::HANDLE_HANGUP;
is($mask, 9, 'fully qualified constants combine');

done_testing;
