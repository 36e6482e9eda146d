<?php
// The seed's backend with a number uid, as PHP code often has one (an id
// from a database row): array('uid'=>42, ...).
//   php push_number_uid.php PORT
$port = $argv[1];
$client = stream_socket_client('tcp://127.0.0.1:'.$port, $errno, $errmsg, 1);
$data = array('uid'=>42, 'percent'=>'88%');
fwrite($client, json_encode($data)."\n");
fwrite(STDERR, json_encode($data));
echo fread($client, 8192);
