"""The Debian package tier: the .deb built, installed and operated on a booted Debian 12."""
