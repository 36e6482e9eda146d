<?php
// The seed's pattern at volume: a NEW connection for every push, exactly as
// the seed's backend does it, N times, spread over the given uids in turn.
//   php push_many.php PORT N UID[,UID...]
// Push i goes to uid number i % count with the data
// array('uid'=>UID, 'seq'=>i). Prints "ok=A fail=F other=O" at the end, and
// every answer that is not "ok\n" on stderr.
$port = $argv[1];
$n = (int)$argv[2];
$uids = explode(',', $argv[3]);
$ok = 0;
$fail = 0;
$other = 0;
for ($i = 0; $i < $n; $i++) {
    $client = stream_socket_client('tcp://127.0.0.1:'.$port, $errno, $errmsg, 1);
    if ($client === false) {
        fwrite(STDERR, "push $i: connect failed: $errno $errmsg\n");
        $other++;
        continue;
    }
    $data = array('uid'=>$uids[$i % count($uids)], 'seq'=>$i);
    fwrite($client, json_encode($data)."\n");
    $answer = fread($client, 8192);
    fclose($client);
    if ($answer === "ok\n") {
        $ok++;
    } else {
        fwrite(STDERR, "push $i: ".var_export($answer, true)."\n");
        if ($answer === "fail\n") {
            $fail++;
        } else {
            $other++;
        }
    }
}
echo "ok=$ok fail=$fail other=$other\n";
