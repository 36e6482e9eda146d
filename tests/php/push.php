<?php
// The seed's backend, unchanged but for where the port and the data come from.
//   php push.php PORT UID [MSG]
// Prints what the seed prints (the gateway's answer, as fread returns it) on
// stdout, and the line it wrote (without "\n") on stderr, so the test can
// compare the bytes a WebSocket client receives with what PHP sent.
$port = $argv[1];
$data = array('uid'=>$argv[2], 'percent'=>'88%');
if (isset($argv[3])) {
    $data['msg'] = $argv[3];
}
// connect to the internal push port
$client = stream_socket_client('tcp://127.0.0.1:'.$port, $errno, $errmsg, 1);
// port 5678 speaks the Text protocol: the data must end with a newline
fwrite($client, json_encode($data)."\n");
fwrite(STDERR, json_encode($data));
// read the result
echo fread($client, 8192);
