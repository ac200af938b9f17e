<?php
// A RoadRunner-protocol HTTP worker in plain PHP, for fephp's codec tests: reads goridge frames
// from STDIN, writes them to STDOUT. Written from the protocol's description (the layout in
// fephp/roadrunner/_frames.py), no library. Run it with display_errors=stderr: anything else
// printed to STDOUT would corrupt the frames.
//
// Routes, by the request URI's path:
//   /hello   200, text/plain, two Set-Cookie headers, "hello <method> <md5 of the body>"
//   /echo    200, the request context as PHP decoded it, re-encoded as JSON, and the body's length
//   /stream  200 in three frames: "one", "two", "three" (STREAM set on the first two)
//   /endless 200 streamed in "tick" frames, PING on every fifth (as roadrunner-php/worker asks), until
//            fephp sends a frame with the STOP bit: then one empty frame without STREAM acknowledges
//            it; after 10000 frames without a STOP, an ERROR frame "never stopped"
//   /error   an ERROR frame "boom"
//   /stop    {"stop":true} in answer, then exit (the worker asks to be retired)

declare(strict_types=1);

const CONTROL = 0x01;
const CODEC_JSON = 0x08;
const ERROR = 0x40;
const STREAM = 0x01;
const STOP = 0x02;
const PING = 0x04;

function read_exactly($in, int $n): ?string
{
    $data = '';
    while (strlen($data) < $n) {
        $part = fread($in, $n - strlen($data));
        if ($part === false || $part === '') {
            return null; // EOF: fephp closed our stdin
        }
        $data .= $part;
    }
    return $data;
}

/** @return array{0: int, 1: int[], 2: int, 3: string}|null flags, options, stream bits, payload */
function read_frame($in): ?array
{
    $head = read_exactly($in, 12);
    if ($head === null) {
        return null;
    }
    $h = unpack('Cfirst/Cflags/Vlength/Vcrc/Cstream/Cunused', $head);
    if ($h['first'] >> 4 !== 1) {
        fwrite(STDERR, "bad version\n");
        exit(2);
    }
    if ((crc32(substr($head, 0, 6)) & 0xFFFFFFFF) !== $h['crc']) {
        fwrite(STDERR, "bad CRC\n");
        exit(2);
    }
    $words = ($h['first'] & 0x0F) - 3;
    $options = $words > 0 ? array_values(unpack('V' . $words, read_exactly($in, 4 * $words))) : [];
    $payload = $h['length'] > 0 ? read_exactly($in, $h['length']) : '';
    return [$h['flags'], $options, $h['stream'], $payload];
}

function write_frame(string $payload, int $flags, array $options = [], int $stream = 0): void
{
    $first = pack('CCV', 1 << 4 | (3 + count($options)), $flags, strlen($payload));
    $frame = $first . pack('VCC', crc32($first), $stream, 0);
    foreach ($options as $option) {
        $frame .= pack('V', $option);
    }
    fwrite(STDOUT, $frame . $payload);
    fflush(STDOUT);
}

function respond(int $status, array $headers, string $body, bool $more = false): void
{
    $context = json_encode(['status' => $status, 'headers' => $headers ?: (object)[]], JSON_THROW_ON_ERROR);
    write_frame($context . $body, CODEC_JSON, [strlen($context)], $more ? STREAM : 0);
}

while (($frame = read_frame(STDIN)) !== null) {
    [$flags, $options, $stream, $payload] = $frame;
    if ($flags & CONTROL) {
        $command = json_decode($payload, true, 512, JSON_THROW_ON_ERROR);
        if (!empty($command['stop'])) {
            exit(0);
        }
        if (!empty($command['pid'])) {
            write_frame(json_encode(['pid' => getmypid()]), CONTROL);
        }
        continue;
    }
    if ($stream !== 0) {
        continue; // STOP or PONG: no stream of ours is ever in progress when we read
    }
    $context = json_decode(substr($payload, 0, $options[0]), true, 512, JSON_THROW_ON_ERROR);
    $body = substr($payload, $options[0]);
    switch (parse_url($context['uri'], PHP_URL_PATH)) {
        case '/hello':
            respond(200, ['Content-Type' => ['text/plain'], 'Set-Cookie' => ['a=1', 'b=2']],
                'hello ' . $context['method'] . ' ' . md5($body));
            break;
        case '/echo':
            respond(200, ['Content-Type' => ['application/json']],
                json_encode(['context' => $context, 'bodyLength' => strlen($body)], JSON_THROW_ON_ERROR));
            break;
        case '/stream':
            respond(200, ['Content-Type' => ['text/plain']], 'one', true);
            write_frame('two', CODEC_JSON, [0], STREAM);
            write_frame('three', CODEC_JSON, [0]);
            break;
        case '/endless':
            respond(200, ['Content-Type' => ['text/plain']], 'tick', true);
            for ($sent = 1; $sent < 10000; $sent++) {
                $read = [STDIN];
                $none = null;
                if (stream_select($read, $none, $none, 0) > 0) {
                    $next = read_frame(STDIN);
                    if ($next !== null && ($next[2] & STOP)) {
                        write_frame('', CODEC_JSON, [0]);
                        continue 3; // back to waiting for a request
                    }
                }
                write_frame('tick', CODEC_JSON, [0], STREAM | ($sent % 5 === 0 ? PING : 0));
            }
            write_frame('never stopped', ERROR);
            break;
        case '/error':
            write_frame('boom', ERROR);
            break;
        case '/stop':
            write_frame('{"stop":true}', 0, [13]);
            exit(0);
        default:
            respond(404, [], 'no route');
    }
}
