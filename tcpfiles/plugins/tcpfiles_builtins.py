"""The behaviours that ship with tcpfiles, found by ``getPlugins`` like any third-party one."""

from tcpfiles.chat.plugin import chat
from tcpfiles.echo.plugin import echo, upper
from tcpfiles.files.plugin import files
from tcpfiles.oneshot.plugin import oneshot
from tcpfiles.udp_echo.plugin import udp_echo

__all__ = ["chat", "echo", "files", "oneshot", "udp_echo", "upper"]
