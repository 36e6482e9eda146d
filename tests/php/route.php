<?php
// The seed's routing of text-port lines, step for step, for the differential
// test (tests/differential.rs). No sockets: the "browsers" are the frames they
// bound with, kept as push.php kept them, in a PHP array.
//
//   php route.php < requests
//
// Reads one request per line, its bytes hex-encoded so any byte survives:
//   B <frame>    a browser bound with this first frame:
//                $worker->uidConnections[$connection->uid] = $connection
//   S <stream>   a backend wrote these bytes to the text port
// For every packet of a stream, cut as Workerman's Text::input cuts (up to and
// including the first "\n") and decoded as Text::decode does
// (rtrim($buffer, "\r\n")), the onMessage steps run:
//   $data = json_decode($buffer, true); $uid = $data['uid'];
//   isset($worker->uidConnections[$uid]) ... ->send($buffer)
// and one answer line is printed:
//   ok <kind> <frame of the browser reached> <bytes it was sent>
//   fail <kind>
//   throw <exception class>      (Workerman exited the worker on this)
// then "end" after each stream. <kind> is PHP's type of $uid; a float is
// "double-exact" when it is an integer below 2^53 in magnitude, otherwise
// "double-inexact". Frames and bytes are hex.
ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');
error_reporting(E_ALL);

$uidConnections = array();

function kind($uid) {
    $type = gettype($uid);
    if ($type === 'double') {
        $exact = is_finite($uid) && floor($uid) == $uid && abs($uid) < 9007199254740992.0;
        return $exact ? 'double-exact' : 'double-inexact';
    }
    return $type;
}

function route($buffer) {
    global $uidConnections;
    try {
        $data = json_decode($buffer, true);
        $uid = $data['uid'];
        $kind = kind($uid);
        if (isset($uidConnections[$uid])) {
            return "ok $kind " . bin2hex($uidConnections[$uid]) . ' ' . bin2hex($buffer);
        }
        return "fail $kind";
    } catch (Throwable $e) {
        return 'throw ' . get_class($e);
    }
}

while (($request = fgets(STDIN)) !== false) {
    $request = rtrim($request, "\n");
    if ($request === '') {
        continue;
    }
    $parts = explode(' ', $request, 2);
    $bytes = @hex2bin(isset($parts[1]) ? $parts[1] : "");
    if ($bytes === false) {
        fwrite(STDERR, "bad request line: $request\n");
        exit(2);
    }
    if ($parts[0] === 'B') {
        $uidConnections[$bytes] = $bytes;
        continue;
    }
    while (($pos = strpos($bytes, "\n")) !== false) {
        $packet = substr($bytes, 0, $pos + 1);
        $bytes = (string)substr($bytes, $pos + 1);
        echo route(rtrim($packet, "\r\n")), "\n";
    }
    echo "end\n";
}
